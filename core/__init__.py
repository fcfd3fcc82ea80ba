"""Allot's core: everything that is not Qt (DESIGN.md, "Layout")."""
