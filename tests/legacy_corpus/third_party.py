import json
import sys

import click

event = json.load(sys.stdin)
click.echo(f"click {click.__name__} says {event['tool_name']}")
click.echo("to stderr", err=True)
