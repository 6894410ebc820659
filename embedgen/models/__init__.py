"""Models: the registry of known models, manifests, and resolving a name to a folder."""
