"""The shared core every stage uses: params (config), default paths, errors, console output, atomic
files, image reading, and the two on-disk formats between stages (a fetched dataset, prepared
arrays). Part of every stage's DVC dependencies, so it stays small and imports little."""
