"""Running on existing distributed engines: Ray for indexing (ray_index.py); torchrun training lives in
training/distributed.py. Nothing here is imported unless asked for (`landmark index --engine ray`)."""
