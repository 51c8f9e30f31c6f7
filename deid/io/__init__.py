"""Input and output: images (``images``) and network weights (``weights``)."""
