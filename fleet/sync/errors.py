"""Why a pull failed, classified the way the coordinator and the journal need it.

Every failure of a request to a vehicle becomes one `PullError` subclass. The class decides the journal
status (`timeout` or `error`), whether trying again soon can help (`retryable`), and the short `kind` used in
metrics labels and logs. The message never contains the API key.
"""

from __future__ import annotations

from fleet.errors import FleetError


class PullError(FleetError):
    """A request to a vehicle's Outbound API failed."""

    kind = "error"
    journal_status = "error"
    retryable = True

    def __init__(self, endpoint: str, message: str) -> None:
        super().__init__(f"{endpoint}: {message}")
        self.endpoint = endpoint


class PullTimeout(PullError):
    """The vehicle did not answer completely within the pull timeout."""

    kind = "timeout"
    journal_status = "timeout"


class PullUnreachable(PullError):
    """No connection could be made (refused, no route, reset): the vehicle is offline or its VPN is down."""

    kind = "unreachable"


class PullAuthError(PullError):
    """The vehicle refused the API key (401/403): a configuration problem that retrying will not fix."""

    kind = "auth"
    retryable = False


class PullHttpError(PullError):
    """The vehicle answered with an HTTP error status."""

    kind = "http"

    def __init__(self, endpoint: str, status: int, message: str) -> None:
        super().__init__(endpoint, f"HTTP {status}: {message}")
        self.status = status


class PullProtocolError(PullError):
    """The answer breaks the data contract: too large, not JSON, wrong shape or types."""

    kind = "protocol"


class NoApiKey(PullError):
    """Neither `vehicles.api_key` nor `VEHICLE_DEFAULT_API_KEY` is set, so the vehicle is not contacted."""

    kind = "auth"
    retryable = False

    def __init__(self) -> None:
        super().__init__(
            "status",
            "no API key: set the vehicle's with `fleet vehicle set-key` (POST /admin/vehicles/{id}/api-key) "
            "or VEHICLE_DEFAULT_API_KEY",
        )


class LeaseLost(FleetError):
    """Another sync worker took over the vehicle (our lease expired); stop touching it."""
