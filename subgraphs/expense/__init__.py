"""The expense subgraph (port 4003, Postgres schema `expense`): expenses backed by supplier CFDIs,
receipts, and approval workflows defined per organization as data."""
