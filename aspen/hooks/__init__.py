"""Hook events: committed changes in the store, as topics a subscriber
(a plugin today) receives in order per key and at least once."""
