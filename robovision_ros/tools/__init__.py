"""Command-line tools: export, benchmark, the demo (main job), fine-tuning. The runtime never imports them."""
