"""Distributed mode: etcd launcher, node membership, cluster status."""
