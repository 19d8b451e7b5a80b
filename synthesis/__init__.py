"""pix2pix synthetic (image, mask) pairs from consensus masks (a pure torch library)."""
