"""The filtering DNS resolver: listeners, the fast path and the resolver chain."""
