"""Instruments the simulated brokerage trades, and their deterministic prices.

The core set mirrors the kinds of contracts the project must handle: USD stocks (conids of real
contracts where they are public, e.g. AAPL 265598, INTU 270662, MRK 70101545), stocks in CAD and EUR,
AAPL options (OPT, multiplier 100), an E-mini future (FUT, multiplier 50) and ForecastEx event
contracts (OPT on FORECASTX, multiplier 1, YES = call conid, NO = put conid; docs/ibkr-api.md#event-contracts).
Synthetic USD stocks fill the catalogue up to the scenario's positions per account.
Conids other than the public ones are made up; they are stable for a given seed and start date.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

CENT = Decimal("0.01")


@dataclass(slots=True)
class Instrument:
    """One contract with what the payloads need to describe it."""

    conid: int
    symbol: str
    sec_type: str  # STK | OPT | FUT
    currency: str
    exchange: str  # listing exchange (STK) or the only exchange (derivatives)
    company_name: str
    multiplier: Decimal
    base_price: Decimal
    tick: Decimal = CENT
    right: str | None = None  # C | P
    strike: Decimal | None = None
    expiry: date | None = None
    underlying_conid: int | None = None
    trading_class: str | None = None
    is_event: bool = False
    pair_conid: int | None = None  # the other outcome of an event contract
    country: str = "US"

    @property
    def conid_ex(self) -> str:
        return str(self.conid)

    @property
    def is_derivative(self) -> bool:
        return self.sec_type in {"OPT", "FUT"}

    @property
    def description_2(self) -> str | None:
        """The derivative description the trades payload carries (e.g. ``(AAPL) Jan15 '27 200 Call``)."""
        if self.expiry is None:
            return None
        when = self.expiry.strftime("%b%d '%y")
        if self.sec_type == "FUT":
            return f"{self.symbol} {self.expiry.strftime('%b%y').upper()}"
        right = "Call" if self.right == "C" else "Put"
        strike = _fmt_strike(self.strike)
        venue = " @FORECASTX" if self.is_event else ""
        return f"({self.trading_class}) {when} {strike} {right}{venue}"

    @property
    def contract_desc(self) -> str:
        """The ``contractDesc`` of a positions row."""
        if self.sec_type == "STK":
            return self.symbol
        if self.sec_type == "FUT" and self.expiry is not None:
            return f"{self.symbol} {self.expiry.strftime('%b%y').upper()}"
        assert self.expiry is not None
        right = "C" if self.right == "C" else "P"
        venue = " @FORECASTX" if self.is_event else ""
        return (
            f"{self.symbol} {self.expiry.strftime('%b%Y').upper()} {_fmt_strike(self.strike)} {right}{venue}"
        )

    @property
    def outcome(self) -> str | None:
        """YES / NO for event contracts."""
        if not self.is_event:
            return None
        return "YES" if self.right == "C" else "NO"


_MASK = (1 << 64) - 1


def _mix(z: int) -> int:
    z &= _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def _fmt_strike(strike: Decimal | None) -> str:
    if strike is None:
        return ""
    return format(strike.normalize(), "f")


class Catalog:
    """All instruments, indexed by conid and symbol, with deterministic pricing."""

    def __init__(self, seed: int, start: date, synthetic_stocks: int) -> None:
        self.seed = seed
        self.start = start
        self.by_conid: dict[int, Instrument] = {}
        self._mids: dict[tuple[int, int], Decimal] = {}
        self._build_core(start)
        self._build_synthetic(synthetic_stocks)
        self.stocks = [i for i in self.by_conid.values() if i.sec_type == "STK"]
        self.options = [i for i in self.by_conid.values() if i.sec_type == "OPT" and not i.is_event]
        self.futures = [i for i in self.by_conid.values() if i.sec_type == "FUT"]
        self.events = [i for i in self.by_conid.values() if i.is_event]
        # Underlying index of the ForecastEx contracts (searchable, not tradable here).
        self.event_underlying = {"conid": 658663572, "symbol": "FF", "name": "US Fed Funds Target Rate"}

    # -- building ------------------------------------------------------------------------------
    def _add(self, inst: Instrument) -> None:
        self.by_conid[inst.conid] = inst

    def _build_core(self, start: date) -> None:
        core = [
            (265598, "AAPL", "APPLE INC", "NASDAQ.NMS", "190.10"),
            (272093, "MSFT", "MICROSOFT CORP", "NASDAQ.NMS", "412.35"),
            (270662, "INTU", "INTUIT INC", "NASDAQ.NMS", "420.08"),
            (70101545, "MRK", "MERCK & CO INC", "NYSE", "86.41"),
            (756733, "SPY", "SPDR S&P 500 ETF TRUST", "ARCA", "655.89"),
            (320227571, "QQQ", "INVESCO QQQ TRUST SERIES 1", "NASDAQ.NMS", "584.68"),
            (76792991, "TSLA", "TESLA INC", "NASDAQ.NMS", "248.50"),
        ]
        for conid, sym, name, exch, px in core:
            self._add(Instrument(conid, sym, "STK", "USD", exch, name, Decimal(1), Decimal(px)))
        self._add(
            Instrument(195014116, "SHOP", "STK", "CAD", "TSE", "SHOPIFY INC", Decimal(1), Decimal("142.30"))
        )
        self.by_conid[195014116].country = "CA"
        self._add(Instrument(14204, "SAP", "STK", "EUR", "IBIS", "SAP SE", Decimal(1), Decimal("218.40")))
        self.by_conid[14204].country = "DE"
        # AAPL options: one series expired yesterday (history expiries), one expiring tomorrow
        # (an /sim/advance shows the X rows), one a month out.
        conid = 700100000
        for days in (-1, 1, 30):
            exp = start + timedelta(days=days)
            for strike in (Decimal(180), Decimal(200)):
                for right in ("C", "P"):
                    conid += 1
                    opt_px = Decimal("12.40") if (right == "C") == (strike == 180) else Decimal("3.15")
                    self._add(
                        Instrument(
                            conid,
                            "AAPL",
                            "OPT",
                            "USD",
                            "SMART",
                            "APPLE INC",
                            Decimal(100),
                            opt_px,
                            right=right,
                            strike=strike,
                            expiry=exp,
                            underlying_conid=265598,
                            trading_class="AAPL",
                        )
                    )
        self._add(
            Instrument(
                637533641,
                "ES",
                "FUT",
                "USD",
                "CME",
                "E-mini S&P 500",
                Decimal(50),
                Decimal("6650.25"),
                tick=Decimal("0.25"),
                expiry=start + timedelta(days=80),
                underlying_conid=11004968,
                trading_class="ES",
            )
        )
        # ForecastEx: two strikes of FF, each a YES (call) and NO (put) conid.
        exp = start + timedelta(days=21)
        for yes, no, strike_txt, yes_px in (
            (713921696, 713921700, "3.125", "0.62"),
            (713921704, 713921708, "3.375", "0.31"),
        ):
            for conid_, right, pair, price in (
                (yes, "C", no, Decimal(yes_px)),
                (no, "P", yes, 1 - Decimal(yes_px)),
            ):
                self._add(
                    Instrument(
                        conid_,
                        "FF",
                        "OPT",
                        "USD",
                        "FORECASTX",
                        "US Fed Funds Target Rate",
                        Decimal(1),
                        price,
                        right=right,
                        strike=Decimal(strike_txt),
                        expiry=exp,
                        underlying_conid=658663572,
                        trading_class="FF",
                        is_event=True,
                        pair_conid=pair,
                    )
                )

    def _build_synthetic(self, count: int) -> None:
        rng = random.Random(f"{self.seed}|catalog")
        used = {i.symbol for i in self.by_conid.values()}
        for n in range(count):
            while True:
                sym = "".join(rng.choice(string.ascii_uppercase) for _ in range(rng.choice((3, 4))))
                if sym not in used:
                    used.add(sym)
                    break
            conid = 40_000_000 + n * 13
            px = Decimal(rng.randint(500, 50_000)) / 100
            exch = rng.choice(("NYSE", "NASDAQ.NMS", "ARCA"))
            self._add(Instrument(conid, sym, "STK", "USD", exch, f"{sym} HOLDINGS INC", Decimal(1), px))

    # -- lookups -------------------------------------------------------------------------------
    def get(self, conid: int) -> Instrument | None:
        return self.by_conid.get(conid)

    def search(self, symbol: str) -> list[Instrument]:
        """Instruments whose symbol equals ``symbol`` (case-insensitive)."""
        sym = symbol.upper()
        return [i for i in self.by_conid.values() if i.symbol == sym]

    # -- prices --------------------------------------------------------------------------------
    def unit(self, *parts: int) -> float:
        """A deterministic number in [0, 1) for (seed, *parts): a splitmix64 mix, cheap enough to call
        for every position of every request."""
        x = self.seed & _MASK
        for part in parts:
            x = _mix((x ^ (part & _MASK)) + 0x9E3779B97F4A7C15)
        return (x >> 11) / float(1 << 53)

    def mid(self, inst: Instrument, when: datetime) -> Decimal:
        """Deterministic mid price of ``inst`` at ``when`` (minute resolution, memoised)."""
        minute = int(when.timestamp() // 60)
        key = (inst.conid, minute)
        price = self._mids.get(key)
        if price is None:
            if len(self._mids) > 500_000:
                self._mids.clear()
            price = self._mids[key] = self._mid(inst, when, minute)
        return price

    def _mid(self, inst: Instrument, when: datetime, minute: int) -> Decimal:
        day = when.date().toordinal()
        if inst.is_event:
            yes = inst if inst.right == "C" else self.by_conid[inst.pair_conid or 0]
            p = yes.base_price + Decimal(round((self.unit(yes.conid, minute) - 0.5) * 10)) / 100
            p = min(max(p, Decimal("0.02")), Decimal("0.98"))
            return p if inst.right == "C" else 1 - p
        drift = 1 + (self.unit(inst.conid, 1, day) - 0.5) * 0.04
        noise = 1 + (self.unit(inst.conid, 2, minute) - 0.5) * 0.004
        raw = inst.base_price * Decimal(str(round(drift * noise, 6)))
        return max(self._round(raw, inst.tick), inst.tick)

    @staticmethod
    def _round(value: Decimal, tick: Decimal) -> Decimal:
        return (value / tick).quantize(Decimal(1)) * tick

    def quote(self, inst: Instrument, when: datetime) -> tuple[Decimal, Decimal, Decimal]:
        """(bid, ask, last) at ``when``."""
        mid = self.mid(inst, when)
        half = inst.tick if inst.sec_type != "STK" else CENT
        bid = max(mid - half, inst.tick)
        ask = mid + half
        if inst.is_event:
            ask = min(ask, Decimal("0.99"))
        return bid, ask, mid

    def size_at_touch(self, inst: Instrument, when: datetime) -> Decimal:
        """Displayed size at the best price: what a limit order can take at once (partial fills)."""
        u = self.unit(inst.conid, 3, int(when.timestamp() // 60))
        if inst.sec_type == "STK":
            return Decimal(100 * (1 + int(u * 10)))
        return Decimal(5 + int(u * 20))

    @staticmethod
    def market_open(inst: Instrument, when: datetime) -> bool:
        """A coarse session model: stocks/options 13:30-20:00 UTC on weekdays (US, DST ignored; CAD/EUR
        use the same window for simplicity); futures and event contracts trade around the clock on weekdays."""
        if when.weekday() >= 5:
            return False
        if inst.sec_type == "FUT" or inst.is_event:
            return True
        minutes = when.hour * 60 + when.minute
        return 13 * 60 + 30 <= minutes < 20 * 60
