"""The plan: budget bars, plan view, timeline, comparison, exports, layer graph, the planning worker."""
