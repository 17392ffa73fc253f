"""What `landmark tag` writes or remembers about a photo: the JSON sidecar (jsonfile), XMP keywords (xmp),
keywords inside the file (embedded), the records of what `untag` may take back (ownership), the checked
reading of our entry (facts) and the photos checked with nothing to record (checked)."""
