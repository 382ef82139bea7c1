"""Command-line tools that make or change models (fine-tuning, demos). The runtime never imports them."""
