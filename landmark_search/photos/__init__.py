"""A user's photos: the folder walk and supported formats (files), decoding (images) and the EXIF reader (exif).
`files` stays free of torch so that commands with nothing to compute start fast."""
