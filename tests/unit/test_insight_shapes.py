"""The pure parts of the insight queries: the answer's rounding and nulls, the params a job
stores, the SQL a saved cohort becomes."""
from datetime import UTC, date, datetime

from shared.analytics.insights import cohorts, funnels, lifecycle, retention

QUERY = funnels.FunnelQuery(
    steps=[funnels.FunnelStep("view"), funnels.FunnelStep("trial"), funnels.FunnelStep("buy", {"price": 10})],
    window_seconds=3600, start=datetime(2025, 1, 1, tzinfo=UTC), end=datetime(2025, 2, 1, tzinfo=UTC))


def test_steps_round_and_say_null_where_undefined():
    steps = funnels._steps(QUERY, {"n1": 3, "n2": 2, "n3": 0, "m2": 1234.56789, "m3": None})
    assert steps == [
        {"event_type": "view", "persons": 3, "conversion_from_previous": 1.0, "conversion_from_first": 1.0,
         "median_seconds_to_convert": None},
        {"event_type": "trial", "persons": 2, "conversion_from_previous": 0.6667, "conversion_from_first": 0.6667,
         "median_seconds_to_convert": 1234.568},
        {"event_type": "buy", "persons": 0, "conversion_from_previous": 0.0, "conversion_from_first": 0.0,
         "median_seconds_to_convert": None},
    ]
    empty = funnels._steps(QUERY, {"n1": 0, "n2": 0, "n3": 0, "m2": None, "m3": None})
    assert all(s["conversion_from_previous"] is None and s["conversion_from_first"] is None for s in empty)


def test_params_round_trip():
    assert funnels.from_params(funnels.to_params(QUERY)) == QUERY
    query = retention.RetentionQuery("first_event", "week", 4, "buy", date(2025, 1, 6), date(2025, 2, 3), "vips")
    assert retention.from_params(retention.to_params(query)) == query
    life = lifecycle.LifecycleQuery("month", date(2025, 1, 1), date(2025, 6, 1), None, None)
    assert lifecycle.from_params(lifecycle.to_params(life)) == life


def test_funnel_sql_is_one_entry_read_and_one_lookup_per_further_step():
    sql, params = funnels.paths_sql(QUERY, "f_")
    assert sql.count("LEFT JOIN LATERAL") == 2 and sql.count("LIMIT 1") == 2
    assert params["f_w3"] == '{"price": 10}' and "f_w1" not in params
    assert "x.at > s2.t" in sql  # step 3 after step 2, not merely after the entry


def test_rfm_filters():
    assert cohorts.rfm_filter("545") == {"rfm.recency": 5, "rfm.frequency": 4, "rfm.monetary": 5}
    assert cohorts.rfm_filter("5x5") == {"rfm.recency": 5, "rfm.monetary": 5}
    assert cohorts.rfm_filter("xxx") == {"rfm.recency": {"$gte": 1}}


def test_cohort_filters_intersect():
    reached = {"funnel": funnels.to_params(QUERY), "step": 2}
    sql, params = cohorts.members_sql({"segment": "VIP", "country": "UA", "reached_step": reached,
                                       "event_in_last_days": {"event_type": "login", "days": 7}})
    assert sql.count(" INTERSECT ") == 3
    assert params["c_segment"] == "VIP" and params["c_country"] == "UA" and params["c_recent_days"] == 7
    assert "r.t2 IS NOT NULL" in sql and params["c_r_e1"] == "view"
