"""Entry point of `kubemta-dns-resolver`: load the settings, build the router, consume `route`."""

import asyncio

import dns.resolver

from kubemta_common.amqp import stages
from kubemta_common.amqp.consumer import subscribe_deliveries
from kubemta_common.command_line import service_main
from kubemta_common.errors import ConfigError
from kubemta_common.events.decision_follower import BackgroundFollower
from kubemta_common.events.tracker_client import TrackerClient
from kubemta_common.route_answer_log import RouteAnswerLog
from kubemta_common.service import ConsumerSpec, ServiceCore, both_lanes, serve_consumers
from kubemta_common.ttl_cache import TtlLruCache
from kubemta_dns_resolver.checks import JobChecks
from kubemta_dns_resolver.handler import RouteHandler
from kubemta_dns_resolver.lookup import DnspythonLookup
from kubemta_dns_resolver.mta_sts import MtaStsResolver
from kubemta_dns_resolver.mta_sts_fetch import HttpsPolicyFetcher
from kubemta_dns_resolver.route_tls import RouteTlsPolicy
from kubemta_dns_resolver.router import CachePolicy, Router
from kubemta_dns_resolver.settings import ResolverSettings

DESCRIPTION = "kubemta dns-resolver: finds each delivery job's route (transport, relayhost or MX)."
SERVICE = "dns-resolver"


def build_router(settings: ResolverSettings, answers: RouteAnswerLog | None = None) -> Router:
    """The router configured by `settings` (raises ConfigError when no name server is known), sharing the routes it
    builds through `answers`."""
    try:
        lookup = DnspythonLookup(settings.dns_nameservers, settings.dns_timeout)
    except dns.resolver.NoResolverConfiguration as exc:
        raise ConfigError(f"no name servers: set KUBEMTA_DNS_NAMESERVERS or fix /etc/resolv.conf ({exc})") from None
    return Router(
        lookup,
        transports=settings.transports,
        relayhost=settings.relayhost,
        delivery_port=settings.delivery_port,
        cache=TtlLruCache(settings.dns_cache_size),
        policy=CachePolicy(max_ttl=settings.dns_max_ttl, negative_ttl=settings.dns_negative_ttl),
        tls=build_route_tls(settings, lookup),
        answers=answers,
        static_answer_ttl=settings.route_answer_ttl,
    )


def build_route_tls(settings: ResolverSettings, lookup: DnspythonLookup) -> RouteTlsPolicy:
    """KUBEMTA_TLS_POLICY and, unless KUBEMTA_MTA_STS is off, MTA-STS over the resolver's own DNS."""
    mta_sts = None
    if settings.mta_sts:
        fetcher = HttpsPolicyFetcher(
            lookup, port=settings.mta_sts_port, ca_file=settings.mta_sts_ca_file, timeout=settings.mta_sts_timeout
        )
        mta_sts = MtaStsResolver(lookup, fetcher, cache_size=settings.mta_sts_cache_size)
    return RouteTlsPolicy(settings.tls_policy, mta_sts)


async def _main(stop: asyncio.Event) -> None:
    settings = ResolverSettings.load()
    answers = RouteAnswerLog()
    router = build_router(settings, answers)
    tracker = TrackerClient.from_settings(settings)
    following = BackgroundFollower(settings.decisions_max_age)

    def build(core: ServiceCore) -> list[ConsumerSpec]:
        follower = following.start(core.broker)
        answers.start(core.publisher)
        checks = JobChecks(tracker, follower.decisions, follower.ready)
        handler = RouteHandler(router, core.publisher, events=core.events, checks=checks)
        return both_lanes(subscribe_deliveries(stages.ROUTE, handler.handle))

    try:
        await serve_consumers(ServiceCore(SERVICE, settings), build, stop, before_close=answers.close)
    finally:
        await answers.close()
        await following.stop()
        if tracker is not None:
            await tracker.close()


def main() -> None:
    """Console script: parse the command line, then run until SIGTERM."""
    service_main(SERVICE, DESCRIPTION, ResolverSettings, _main)


if __name__ == "__main__":
    main()
