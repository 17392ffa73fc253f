"""`landmark serve`: a local web app over an index. Rooms: thumbs (thumbnails cached on disk), library (the index,
its files and its warm model), app (pages and the JSON API); what the index lists page by page is index/catalog.py."""
