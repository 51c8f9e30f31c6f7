"""Networks: generator, discriminator, encoder, and the ops they share."""
