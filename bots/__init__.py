"""Chat platforms: each package has an inbound half (verify, normalize, enqueue) and an
outbound half (stream the answer into the thread). Nothing here knows the model."""
