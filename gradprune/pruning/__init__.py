"""Planning which groups to remove (global or local ranking) and the plan format."""
