"""What the simulated exchange lists: long-lived series, a few markets in every non-open status,
and the hourly series whose events roll over.

Tickers follow Kalshi's shape (`SERIES-26NOV24H1500-T45`, upper case) and are never reused within
a run: hourly event tickers carry their close time, long-lived ones a distinct date each.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from kalshi_pipeline.simulator.book import Quote, initial_quote
from kalshi_pipeline.simulator.model import (
    ACTIVE,
    CLOSED,
    CRYPTO_SHARD,
    DEFAULT_SHARD,
    INACTIVE,
    INITIALIZED,
    SPORTS_SHARD,
    Event,
    Exchange,
    Market,
    Series,
    new_market_id,
)
from kalshi_pipeline.simulator.wire import clock_suffix, rfc3339, strike_text, ticker_date

DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000
HOURLY_SERIES = "KXSIMHOURLY"
FIREHOSE_SERIES = "KXSIMFIRE"
BOOK_FIREHOSE_SERIES = "KXSIMBOOK"


@dataclass(frozen=True)
class Theme:
    series: str
    title: str
    category: str
    unit: str
    base: float
    step: float
    shard: int = DEFAULT_SHARD
    floor_c: int | None = None
    """Markets of this series are `floor` markets: YES settles at no less than this (cents)."""


THEMES = (
    Theme("KXSIMTEMP", "Highest temperature in Simville", "Climate and Weather", "F", 40, 1),
    Theme("KXSIMRAIN", "Rainfall in Simville", "Climate and Weather", "in", 0.5, 0.25, floor_c=5),
    Theme("KXSIMSNOW", "Snowfall in Simville", "Climate and Weather", "in", 1, 1),
    Theme("KXSIMCPI", "Simulated CPI year over year", "Economics", "%", 1.5, 0.1),
    Theme("KXSIMFED", "Simulated fed funds upper bound", "Economics", "%", 2.0, 0.25),
    Theme("KXSIMGDP", "Simulated GDP growth", "Economics", "%", -1.0, 0.5),
    Theme("KXSIMJOBS", "Simulated payrolls added", "Economics", "k", 0, 25),
    Theme("KXSIMBTC", "Simulated BTC price", "Crypto", "USD", 60000, 500, CRYPTO_SHARD),
    Theme("KXSIMETH", "Simulated ETH price", "Crypto", "USD", 2000, 25, CRYPTO_SHARD),
    Theme("KXSIMSPX", "Simulated S&P 500 close", "Financials", "pts", 5000, 25),
    Theme("KXSIMNDX", "Simulated Nasdaq 100 close", "Financials", "pts", 18000, 100),
    Theme("KXSIMOIL", "Simulated WTI crude price", "Commodities", "USD", 60, 1, CRYPTO_SHARD),
    Theme("KXSIMGOLD", "Simulated gold price", "Commodities", "USD", 2000, 10, CRYPTO_SHARD),
    Theme("KXSIMGAS", "Simulated gas price", "Economics", "USD", 2.5, 0.05),
    Theme("KXSIMTSA", "Simulated TSA checkpoint travel", "Transportation", "k", 1800, 50),
    Theme("KXSIMPTS", "Simulated basketball total points", "Sports", "pts", 180, 2, SPORTS_SHARD),
    Theme("KXSIMGOALS", "Simulated football total goals", "Sports", "goals", 0.5, 1),
    Theme("KXSIMRUNS", "Simulated baseball total runs", "Sports", "runs", 4.5, 1, SPORTS_SHARD),
    Theme("KXSIMBOX", "Simulated box office opening", "Entertainment", "USD m", 20, 5),
    Theme("KXSIMSTREAM", "Simulated streaming chart rank", "Entertainment", "rank", 1, 1),
    Theme("KXSIMVOTE", "Simulated turnout", "Elections", "%", 40, 1),
    Theme("KXSIMAPPROVE", "Simulated approval rating", "Politics", "%", 35, 1),
    Theme("KXSIMEGGS", "Simulated egg prices", "Economics", "USD", 2, 0.1),
    Theme("KXSIMMORT", "Simulated 30-year mortgage rate", "Economics", "%", 5, 0.05),
)


class Builder:
    """Creates series, events and markets in an `Exchange` with ids from one seeded RNG."""

    def __init__(self, exchange: Exchange, rng: random.Random) -> None:
        self.exchange = exchange
        self.rng = rng

    def series(
        self,
        ticker: str,
        title: str,
        category: str,
        frequency: str,
        now_us: int,
        exchange_index: int = DEFAULT_SHARD,
    ) -> Series:
        s = self.exchange.series.get(ticker)
        if s is None:
            s = Series(
                ticker, title, category, frequency, [category], now_us, now_us, exchange_index
            )
            self.exchange.add_series(s)
        return s

    def market(
        self,
        event: Event,
        suffix: str,
        *,
        title: str,
        yes_sub_title: str,
        strike: float,
        created_us: int,
        open_us: int,
        close_us: int,
        status: str,
        quote: Quote,
        settlement_timer_s: int = 60,
        live: bool = True,
        floor_c: int | None = None,
    ) -> Market:
        m = Market(
            ticker=f"{event.ticker}-{suffix}",
            event_ticker=event.ticker,
            series_ticker=event.series_ticker,
            market_id=new_market_id(self.rng.getrandbits(128)),
            title=title,
            yes_sub_title=yes_sub_title,
            no_sub_title=yes_sub_title,
            rules_primary=f"If the outcome of {event.ticker} is above {strike_text(strike)}, "
            "then the market resolves to Yes.",
            rules_secondary="Simulated market: the outcome is drawn by the local simulator.",
            strike_type="greater",
            floor_strike=strike,
            cap_strike=None,
            created_us=created_us,
            open_us=open_us,
            close_us=close_us,
            expected_expiration_us=close_us + HOUR_US,
            latest_expiration_us=close_us + 7 * DAY_US,
            updated_us=max(created_us, open_us if status != INITIALIZED else created_us),
            status=status,
            quote=quote,
            settlement_timer_s=settlement_timer_s,
            exchange_index=event.exchange_index,
            settlement_floor_c=floor_c,
            live=live,
        )
        if quote.volume:
            m.previous = (quote.bid, quote.ask, quote.last)
        self.exchange.add_market(m)
        return m

    def event(
        self,
        series: Series,
        ticker: str,
        *,
        title: str,
        created_us: int,
        strike_date_us: int | None,
        strike_period: str,
    ) -> Event:
        e = Event(
            ticker=ticker,
            series_ticker=series.ticker,
            title=title,
            sub_title=f"On {rfc3339(strike_date_us)[:10]}" if strike_date_us else "",
            collateral_return_type="",
            mutually_exclusive=False,
            strike_date_us=strike_date_us,
            strike_period=strike_period,
            created_us=created_us,
            updated_us=created_us,
            exchange_index=series.exchange_index,
        )
        self.exchange.add_event(e)
        return e

    def long_lived(self, count: int, now_us: int, first_close_days: int = 30) -> list[Market]:
        """`count` active markets closing weeks to years from now, spread over the themes."""
        made: list[Market] = []
        next_day = dict.fromkeys((t.series for t in THEMES), first_close_days)
        i = 0
        while len(made) < count:
            theme = THEMES[i % len(THEMES)]
            i += 1
            series = self.series(
                theme.series, theme.title, theme.category, "daily", now_us, theme.shard
            )
            day = next_day[theme.series]
            next_day[theme.series] = day + 1 + self.rng.randrange(3)
            close_us = (now_us // DAY_US + day) * DAY_US + 20 * HOUR_US
            created_us = now_us - self.rng.randrange(1, 30 * DAY_US)
            open_us = created_us + self.rng.randrange(HOUR_US)
            event = self.event(
                series,
                f"{theme.series}-{ticker_date(close_us)}",
                title=f"{theme.title} on {rfc3339(close_us)[:10]}?",
                created_us=created_us,
                strike_date_us=close_us,
                strike_period="day",
            )
            n = min(self.rng.randint(5, 25), count - len(made))
            for k in range(n):
                strike = round(theme.base + theme.step * k, 6)
                fair = 95 - (90 * k) // max(n - 1, 1) + self.rng.randint(-3, 3)
                made.append(
                    self.market(
                        event,
                        f"T{strike_text(strike)}",
                        title=f"{theme.title} above {strike_text(strike)} {theme.unit}?",
                        yes_sub_title=f"Above {strike_text(strike)} {theme.unit}",
                        strike=strike,
                        created_us=created_us + k,
                        open_us=open_us,
                        close_us=close_us,
                        status=ACTIVE,
                        quote=initial_quote(self.rng, fair, traded=self.rng.random() < 0.8),
                        floor_c=theme.floor_c,
                    )
                )
        return made

    def extras(self, now_us: int) -> None:
        """One event each of unopened, paused and closed-awaiting-determination markets, so every
        `status` filter of `GET /markets` has something to return from the first second."""
        specs = (
            ("KXSIMFUTURE", "Simulated future event", INITIALIZED, 7 * DAY_US, 14 * DAY_US, 3),
            ("KXSIMPAUSE", "Simulated paused market", INACTIVE, -DAY_US, 14 * DAY_US, 2),
            ("KXSIMPENDING", "Simulated market awaiting result", CLOSED, -DAY_US, -HOUR_US, 2),
        )
        for ticker, title, status, open_off, close_off, n in specs:
            series = self.series(ticker, title, "Simulator", "custom", now_us)
            close_us = (now_us + close_off) // 1_000_000 * 1_000_000
            created_us = now_us - 2 * DAY_US
            event = self.event(
                series,
                f"{ticker}-{ticker_date(close_us)}",
                title=f"{title}?",
                created_us=created_us,
                strike_date_us=close_us,
                strike_period="day",
            )
            for k in range(n):
                strike = float(10 * (k + 1))
                quote = (
                    Quote(0, 100, 0, 0, 0, 0, 0, 0)
                    if status == INITIALIZED
                    else initial_quote(self.rng, 50, traded=True)
                )
                self.market(
                    event,
                    f"T{strike_text(strike)}",
                    title=f"{title} above {strike_text(strike)}?",
                    yes_sub_title=f"Above {strike_text(strike)}",
                    strike=strike,
                    created_us=created_us + k,
                    open_us=(now_us + open_off) // 1_000_000 * 1_000_000,
                    close_us=close_us,
                    status=status,
                    quote=quote,
                )

    def firehose_markets(
        self, count: int, now_us: int, series_ticker: str = FIREHOSE_SERIES
    ) -> list[Market]:
        """Markets that only a firehose moves (the Poisson process leaves them alone): the
        ticker firehose's series, or the order-book firehose's (`BOOK_FIREHOSE_SERIES`)."""
        book = series_ticker == BOOK_FIREHOSE_SERIES
        name = "Simulated order-book firehose" if book else "Simulated firehose"
        series = self.series(series_ticker, name, "Simulator", "custom", now_us)
        made: list[Market] = []
        per_event = 50
        for first in range(0, count, per_event):
            close_us = (now_us // DAY_US + 400 + first // per_event) * DAY_US
            created_us = now_us - DAY_US
            event = self.event(
                series,
                f"{series_ticker}-{ticker_date(close_us)}",
                title=f"{name} market?",
                created_us=created_us,
                strike_date_us=close_us,
                strike_period="day",
            )
            for k in range(min(per_event, count - first)):
                made.append(
                    self.market(
                        event,
                        f"T{k + 1}",
                        title=f"{name} market {k + 1}?",
                        yes_sub_title=f"Above {k + 1}",
                        strike=float(k + 1),
                        created_us=created_us + k,
                        open_us=created_us,
                        close_us=close_us,
                        status=ACTIVE,
                        quote=initial_quote(self.rng, self.rng.randint(5, 95), traded=True),
                        live=False,
                    )
                )
        return made


class HourlySeries:
    """The rolling series: one event per `lifetime_s`, each with `strikes` threshold markets.

    Event k closes on a multiple of the lifetime (top of the hour by default) and its ticker is
    its close time, so a shortened lifetime still never repeats a ticker.
    """

    def __init__(self, builder: Builder, lifetime_s: int, strikes: int) -> None:
        self.builder = builder
        self.lifetime_us = lifetime_s * 1_000_000
        self.strikes = strikes
        self.with_seconds = lifetime_s % 60 != 0
        lead = min(max(lifetime_s * 0.25, 1.0), 300.0)
        self.lead_us = int(lead * 1_000_000)
        """The next event is listed this long before the current one closes."""
        self.determine_after_us = int(min(max(lifetime_s / 20, 0.5), 10.0) * 1_000_000)
        self.settle_after_us = int(min(max(lifetime_s / 20, 0.5), 60.0) * 1_000_000)

    def first_close(self, now_us: int) -> int:
        return (now_us // self.lifetime_us + 1) * self.lifetime_us

    def event_ticker(self, close_us: int) -> str:
        return f"{HOURLY_SERIES}-{ticker_date(close_us)}{clock_suffix(close_us, self.with_seconds)}"

    def build(self, close_us: int, created_us: int, status: str) -> Event:
        b = self.builder
        # Modelled on Kalshi's hourly crypto series, so it lives on the crypto shard.
        series = b.series(
            HOURLY_SERIES, "Simulated hourly index", "Crypto", "hourly", created_us, CRYPTO_SHARD
        )
        label = clock_suffix(close_us, True)[1:]
        when = f"{label[:2]}:{label[2:4]}:{label[4:]} UTC"
        event = b.event(
            series,
            self.event_ticker(close_us),
            title=f"Simulated index at {when}?",
            created_us=created_us,
            strike_date_us=close_us,
            strike_period="hour",
        )
        open_us = close_us - self.lifetime_us
        for k in range(self.strikes):
            strike = float(50 + 2 * (k - self.strikes // 2))
            fair = int(min(max(50 - (strike - 50) * 5, 3), 97))
            quote = (
                Quote(0, 100, 0, 0, 0, 0, 0, 0)
                if status == INITIALIZED
                else initial_quote(b.rng, fair, traded=False)
            )
            b.market(
                event,
                f"T{strike_text(strike)}",
                title=f"Simulated index above {strike_text(strike)} at {when}?",
                yes_sub_title=f"Above {strike_text(strike)}",
                strike=strike,
                created_us=created_us + k,
                open_us=open_us,
                close_us=close_us,
                status=status,
                quote=quote,
                settlement_timer_s=max(1, self.settle_after_us // 1_000_000),
            )
        return event
