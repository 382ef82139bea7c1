"""Command-line tools that run beside the nodes (serving, benchmarks). Runtime modules import nothing from here."""
