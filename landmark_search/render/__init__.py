"""Rendering: one autoescaping Jinja environment and the templates shared by the CLI's pages and the web app."""
