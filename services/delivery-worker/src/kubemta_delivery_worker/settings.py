"""Configuration of the delivery-worker (`KUBEMTA_*` environment variables).

The SMTP timeouts follow RFC 5321 §4.5.3.2: the client waits at least 5 minutes for
the replies to MAIL and RCPT and at least 10 minutes for the reply to the final dot.
"""

from pydantic import Field

from kubemta_common.config_types import Duration, Listen, parse_listen
from kubemta_common.settings import ServiceSettings

# RFC 5321 §4.5.3.2.2 / §4.5.3.2.3: MAIL and RCPT replies, 5 minutes.
COMMAND_TIMEOUT_DEFAULT = 300.0
# RFC 5321 §4.5.3.2.6: the reply to the final "." may take 10 minutes.
DATA_TIMEOUT_DEFAULT = 600.0
# Postfix smtp_connect_timeout.
CONNECT_TIMEOUT_DEFAULT = 30.0


class WorkerSettings(ServiceSettings):
    """Settings of the delivery-worker; `hostname` is the name it sends in EHLO."""

    metrics_listen: Listen = Field(
        default=parse_listen("127.0.0.1:9104"), description="host:port for /metrics, /healthz, /readyz"
    )
    smtp_connect_timeout: Duration = Field(
        default=CONNECT_TIMEOUT_DEFAULT, gt=0, description="TCP connect and server greeting timeout"
    )
    smtp_command_timeout: Duration = Field(
        default=COMMAND_TIMEOUT_DEFAULT, gt=0, description="Timeout for each SMTP command reply (EHLO, MAIL, RCPT...)"
    )
    smtp_data_timeout: Duration = Field(
        default=DATA_TIMEOUT_DEFAULT, gt=0, description="Timeout for the reply to the end of the message data"
    )
