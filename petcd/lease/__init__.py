"""Leases: grant, revoke, renew, expire (etcd's lessor)."""
