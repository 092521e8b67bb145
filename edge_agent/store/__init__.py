"""What is kept on disk: the catalog database, migrations, audit, outbox, results."""
