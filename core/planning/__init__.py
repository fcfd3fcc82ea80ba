"""Planning: the one front door (model choice + device choice + setup -> Problem -> Plan),
device resolution (device_resolution), the problem format, the cost model, solvers (and the
chain DP they share), baselines, exports, and the app's planning process (planning_process)."""
