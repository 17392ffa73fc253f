"""An index of photos: the SQLite manifest (the truth), the store (`PhotoIndex`), the FAISS vector cache and the
read-only catalog the web app pages through. Nothing here imports torch."""
