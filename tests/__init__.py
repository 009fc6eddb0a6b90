"""Cross-service tests: integration (real broker, DNS, SMTP peers) and end-to-end."""
