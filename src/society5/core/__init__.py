"""Core of the platform: settings, errors, database, auth and tenancy, the service contract."""
