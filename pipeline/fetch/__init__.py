"""The fetch stage: sources (one module each, and the SOURCES registry), HTTP downloads, URL-list
collection, safe archive reading and the manifest writer."""
