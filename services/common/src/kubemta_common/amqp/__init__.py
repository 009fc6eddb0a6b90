"""RabbitMQ plumbing: connection, topology, confirmed publishing, acknowledged consuming."""
