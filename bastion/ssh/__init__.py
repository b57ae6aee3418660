"""asyncssh glue: server callbacks, the inner connection, the upstream pool, the host CA."""
