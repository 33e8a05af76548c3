"""The `petcd` command: etcd's flags, ETCD_* variables, --config-file, and
the snapshot restore/status subcommands."""
