#!/usr/bin/env bash
# Makes sure a RabbitMQ answers at 127.0.0.1:5672 for `make run`: uses the one that
# answers, else starts the packaged node (rabbitmq-server -detached) and waits for it.
set -euo pipefail
answers() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
if answers; then
    echo "RabbitMQ answers at 127.0.0.1:5672"
    exit 0
fi
echo "starting RabbitMQ (rabbitmq-server -detached)"
rabbitmq-server -detached
for _ in $(seq 1 120); do
    if answers; then
        rabbitmqctl await_startup --timeout 60 >/dev/null
        echo "RabbitMQ is up at 127.0.0.1:5672"
        exit 0
    fi
    sleep 1
done
echo "RabbitMQ did not come up within 120 s; see /var/log/rabbitmq/" >&2
exit 1
