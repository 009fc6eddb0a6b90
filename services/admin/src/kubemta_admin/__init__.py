"""kubemta admin: the one console script of the administration commands (`kubemta-admin`)."""
