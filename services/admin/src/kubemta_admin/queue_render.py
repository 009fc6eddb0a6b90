"""The tracker's answers as text, the way Postfix prints them: `qshape` (summary), `mailq` (list, held),
`postcat` (show). Each renderer takes the decoded JSON object and returns the lines; a field of the wrong type
or a missing one prints as "-", and every value is escaped (kubemta_admin.text)."""

from kubemta_admin.text import NONE, as_dict, as_int, as_list, cell, human_age, human_time, printable, table

STAGES = ("inbound", "route", "deliver", "results", "held")


def summary(answer: dict[str, object]) -> list[str]:
    """Per stage, per retry tier, per destination domain (count and oldest age), then the broker's queue depths."""
    stages = as_dict(answer.get("stages"))
    names = [*STAGES, *sorted(name for name in stages if name not in STAGES)]
    rows = []
    for name in names:
        stage = as_dict(stages.get(name))
        rows.append(
            [cell(name), cell(stage.get("messages", 0)), _oldest(stage.get("messages"), stage.get("oldest_seconds"))]
        )
    lines = table(["STAGE", "MESSAGES", "OLDEST"], rows, right=frozenset({1}))
    retry = as_dict(answer.get("retry"))
    lines.append("")
    retry_rows = [
        [
            cell(name),
            cell(as_dict(tier).get("jobs")),
            _oldest(as_dict(tier).get("jobs"), as_dict(tier).get("oldest_seconds")),
        ]
        for name, tier in sorted(retry.items(), key=lambda item: _tier_seconds(item[0]))
    ]
    lines += (
        table(["RETRY TIER", "JOBS", "OLDEST"], retry_rows, right=frozenset({1}))
        if retry_rows
        else ["no deferred jobs"]
    )
    domains = [as_dict(entry) for entry in as_list(answer.get("domains"))]
    lines.append("")
    domain_rows = [
        [
            cell(d.get("domain")),
            cell(d.get("jobs")),
            cell(d.get("deferred")),
            _oldest(d.get("jobs"), d.get("oldest_seconds")),
        ]
        for d in domains
    ]
    lines += (
        table(["DOMAIN", "JOBS", "DEFERRED", "OLDEST"], domain_rows, right=frozenset({1, 2}))
        if domain_rows
        else ["no queued jobs"]
    )
    broker = as_dict(answer.get("broker"))
    if broker:
        lines.append("")
        lines += table(
            ["BROKER QUEUE", "DEPTH"], [[cell(q), cell(d)] for q, d in sorted(broker.items())], right=frozenset({1})
        )
    return lines


def _oldest(count: object, seconds: object) -> str:
    """The oldest age, or "-" when nothing is there (the tracker answers 0 seconds for an empty stage)."""
    return "-" if as_int(count) == 0 else human_age(seconds)


def _tier_seconds(name: str) -> int:
    """retry.5m -> 300, so tiers sort by their delay; unknown names last."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    suffix = name.rpartition(".")[2]
    if suffix[:-1].isdigit() and suffix[-1:] in units:
        return int(suffix[:-1]) * units[suffix[-1]]
    return 1 << 62


def messages(answer: dict[str, object]) -> list[str]:
    """mailq: queue id, size, arrival, state and sender, then each recipient on its own line; a total."""
    entries = [as_dict(entry) for entry in as_list(answer.get("messages"))]
    if not entries:
        return ["no messages"]
    rows: list[list[str]] = []
    total = 0
    for entry in entries:
        size = as_int(entry.get("size"))
        total += size or 0
        rows.append(
            [
                cell(entry.get("queue_id")),
                cell(size),
                human_time(entry.get("received_at")),
                cell(entry.get("state")),
                cell(entry.get("sender")) if entry.get("sender") != "" else "<>",
            ]
        )
        rows += [["", "", "", "", "  " + cell(rcpt)] for rcpt in as_list(entry.get("recipients"))]
    lines = table(["QUEUE ID", "SIZE", "ARRIVAL", "STATE", "SENDER / RECIPIENTS"], rows, right=frozenset({1}))
    plural = "" if len(entries) == 1 else "s"
    lines.append(f"-- {len(entries)} message{plural}, {total} bytes")
    return lines


def held(answer: dict[str, object]) -> list[str]:
    """The held jobs: queue id, job id, domain, reason, since when, sender and recipients."""
    entries = [as_dict(entry) for entry in as_list(answer.get("held"))]
    if not entries:
        return ["no held messages"]
    rows: list[list[str]] = []
    for entry in entries:
        rows.append(
            [
                cell(entry.get("queue_id")),
                cell(entry.get("job_id")),
                cell(entry.get("domain")),
                cell(entry.get("reason")),
                human_time(entry.get("held_at")),
                cell(entry.get("sender")) if entry.get("sender") != "" else "<>",
            ]
        )
        rows += [["", "", "", "", "", "  " + cell(rcpt)] for rcpt in as_list(entry.get("recipients"))]
    lines = table(["QUEUE ID", "JOB ID", "DOMAIN", "REASON", "HELD AT", "SENDER / RECIPIENTS"], rows)
    plural = "" if len(entries) == 1 else "s"
    lines.append(f"-- {len(entries)} held job{plural}")
    return lines


def message(answer: dict[str, object]) -> list[str]:
    """postcat: the envelope, the headers, the jobs and the timeline of one message."""
    sender = answer.get("sender")
    client = cell(answer.get("client_address"))
    if answer.get("client_helo"):
        client += f" (helo {cell(answer.get('client_helo'))})"
    lines = [
        "*** ENVELOPE ***",
        f"queue_id: {cell(answer.get('queue_id'))}",
        f"message_id: {cell(answer.get('message_id'))}",
        f"arrival: {human_time(answer.get('received_at'))}",
        f"size: {cell(answer.get('size'))}",
        f"sender: {'<>' if sender == '' else cell(sender)}",
        *(f"recipient: {cell(rcpt)}" for rcpt in as_list(answer.get("recipients"))),
        f"client: {client}",
        f"authenticated_user: {cell(answer.get('authenticated_user'))}",
        f"trust: {cell(answer.get('trust'))}",
        f"listener: {cell(answer.get('listener'))}",
        "*** HEADERS ***",
    ]
    headers = answer.get("headers")
    text = headers if isinstance(headers, str) else ""
    lines += [printable(line, keep_tabs=True) for line in text.rstrip("\r\n").splitlines()] or [NONE]
    lines.append("*** JOBS ***")
    jobs = [as_dict(job) for job in as_list(answer.get("jobs"))]
    job_rows = [
        [
            cell(job.get("job_id")),
            cell(job.get("domain")),
            cell(job.get("state")),
            cell(job.get("attempts")),
            human_time(job.get("next_attempt")),
            cell(job.get("recipients")),
        ]
        for job in jobs
    ]
    lines += (
        table(["JOB ID", "DOMAIN", "STATE", "ATTEMPTS", "NEXT ATTEMPT", "RECIPIENTS"], job_rows, right=frozenset({3}))
        if job_rows
        else [NONE]
    )
    lines.append("*** TIMELINE ***")
    events = [as_dict(event) for event in as_list(answer.get("timeline"))]
    event_rows = [
        [
            human_time(event.get("time")),
            cell(event.get("service")),
            cell(event.get("kind")),
            cell(event.get("job_id")),
            cell(event.get("attempt")),
            _details(event.get("details")),
        ]
        for event in events
    ]
    lines += table(["TIME", "SERVICE", "EVENT", "JOB", "ATTEMPT", "DETAILS"], event_rows) if event_rows else [NONE]
    return lines


def _details(value: object) -> str:
    """An event's details as `key=value` pairs in the order the tracker gave them; a list of recipient outcomes
    or of queued jobs in a short form."""
    details = as_dict(value)
    return " ".join(f"{printable(str(key))}={_detail(item)}" for key, item in details.items()) or NONE


def _detail(value: object) -> str:
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        return ",".join(_record(as_dict(item)) for item in value)
    return cell(value)


def _record(item: dict[str, object]) -> str:
    """A recipient outcome as `bob@x (250 2.0.0 ok)`, a queued job as `job_id[rcpt,...]`, anything else as JSON."""
    if "recipient" in item:
        reply = " ".join(cell(item[key]) for key in ("smtp_code", "status", "diagnostic") if item.get(key))
        return f"{cell(item['recipient'])} ({reply})" if reply else cell(item["recipient"])
    if "job_id" in item:
        return f"{cell(item['job_id'])}[{cell(item.get('recipients'))}]"
    return cell(item)
