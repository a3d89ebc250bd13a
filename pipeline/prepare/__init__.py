"""The survey and prepare stages: image shapes from headers, and fixed-size arrays with a split."""
