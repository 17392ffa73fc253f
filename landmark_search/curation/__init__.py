"""Tidying a library from its index: duplicates, grouping, the pixel check for near duplicates (imagematch, with
its remembered scores in pairmemory) and moving or linking photos with their sidecars (relocate)."""
