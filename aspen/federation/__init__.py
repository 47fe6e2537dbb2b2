"""Federation: the cluster's identity, the apps it serves, signed
announcements exchanged with peer clusters, trust, and forwarding requests
for apps this cluster lacks to a trusted cluster that has them."""
