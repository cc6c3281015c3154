"""The sync service: pull `/status`, `/channels`, `/data` and `/alarms` from every vehicle's Outbound API.

Modules, one concept each:

* `puller`   — the HTTP client of one vehicle's Outbound API (streamed bodies with byte caps, one deadline);
* `transport`— the shared connection pool, one connection per vehicle, found in O(1);
* `parse`    — pure validation of response bodies (wrong types, bad times, NaN, unknown channels);
* `windows`  — how a pull range is cut into requests (hourly after long gaps, 10-minute after truncation);
* `writer`   — group commit of many vehicles' results in few transactions (COPY into a staging table);
* `service`  — one cycle: lease vehicles, pull each one under a semaphore;
* `vehicle`  — one vehicle's pull: status, channels, data windows, alarms, journal, backoff;
* `scheduler`— the coordinator loop (cadence measured from the end of a cycle, log once per state change);
* `gps`      — which channels carry a GPS fix, and the positions of pull vehicles made from them;
* `status`   — the `sync_status` values; the vehicle status rule itself is `fleet.vehicle_status`, shared with
  the API and the live streams;
* `role`, `cli` — `fleet serve --role sync` and `fleet sync --once`.

See docs/SYNC.md for the design and docs/DATA_CONTRACT.md for the API the vehicles speak.
"""
