"""Small reusable widgets: read-only tables, the banner, metric cards, a label that elides."""
