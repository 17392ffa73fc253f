"""Where photos were taken: the places table (table), placing photos by time and GPS (geotag), datasets from GPS
clusters (from_gps) and the HTML map (map)."""
