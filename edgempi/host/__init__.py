"""The node a rank runs on: its cores (torch threads per rank), its memory (a run's estimated
footprint against what the node has free) and the allocator (freed memory kept for the next
step). Set up once per run, before anything is allocated; nothing here trains."""
