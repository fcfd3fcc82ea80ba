"""Planning: the one front door (model choice + device choice + setup -> Problem -> Plan),
device resolution, the problem format, the cost model, solvers, baselines and exports."""
