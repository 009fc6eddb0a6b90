"""kubemta-mail-auth: mail authentication for the kubemta services.

`dkim` holds the DKIM keys and records (the queue-manager signs with them, the ingress checks
them), `domain_check` the DNS check of a sending domain (DKIM, SPF, DMARC, MX, forward and
reverse DNS). It sits beside `kubemta_common`, which keeps the bus, settings, logs, metrics
and the service runtime.
"""
