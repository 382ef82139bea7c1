"""Command-line tools: export, benchmark, the demo (main job). Runtime modules import nothing from here."""
