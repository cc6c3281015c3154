"""`GET /admin/settings`: the running flags and settings (secrets masked), and the state of hot reload."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from fleet.api.deps import AdminSession, State
from fleet.api.schemas import errors
from fleet.auth import oidc
from fleet.config import Settings
from fleet.ops.reload import HOT_SETTINGS, public_value

router = APIRouter(tags=["admin"])


def flags(settings: Settings) -> dict[str, Any]:
    """The feature flags as `config.yaml`'s `flags:` names them (what is in effect now)."""
    return {
        "text_dialect": settings.text_dialect_enabled,
        "auto_register_devices": settings.unknown_device_policy == "register",
        "registration_open": settings.registration_open,
        "google_sign_in": settings.google_sign_in,
        "google_sign_in_configured": oidc.configured(settings),
        "raw_frame_storage": settings.ingest_store_raw_frames,
    }


@router.get(
    "/admin/settings",
    responses=errors(401, 403),
    summary="Feature flags and settings in effect (secrets masked), which reload live, and what awaits a restart",
)
async def admin_settings(session: AdminSession, state: State) -> dict[str, Any]:
    settings = state.settings
    reloader = state.runtime.reloader
    reload_state: dict[str, Any] = {"enabled": reloader is not None}
    if reloader is not None:
        current = reloader.state
        reload_state.update(
            config_file=current.config_file,
            last_reload_at=current.last_reload_at.isoformat().replace("+00:00", "Z")
            if current.last_reload_at
            else None,
            last_result=current.last_result,
            last_error=current.last_error,
            pending_restart={name.upper(): value for name, value in current.pending_restart.items()},
        )
    return {
        "flags": flags(settings),
        "settings": {name.upper(): public_value(getattr(settings, name)) for name in Settings.model_fields},
        "hot_reloadable": sorted(name.upper() for name in HOT_SETTINGS),
        "reload": reload_state,
    }
