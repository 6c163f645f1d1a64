"""Search: text -> image and image -> image over the store's image vectors.

- `searcher`: `ImageSearcher`, exact cosine top-k with path-prefix filters, one hit per distinct image.
"""
