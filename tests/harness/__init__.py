"""Test harness: real servers (RabbitMQ vhost, DNS, SMTP peers) and the services as processes."""
