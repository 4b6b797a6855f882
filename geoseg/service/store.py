"""The service's job store: users and their hashed tokens, scenes, jobs — SQLite through
SQLAlchemy 2, in WAL mode so the API, the job runners and ``geoseg serve token create`` read and
write it at once (each from its own process). Rows leave as plain dicts.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,  # fmt: skip
    event,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from geoseg.errors import GeosegError, OutputError

#: job states; the last three are final
STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL = frozenset({"done", "failed", "cancelled"})
TOKEN_PREFIX = "gst_"


class StoreError(GeosegError):
    """The job store cannot be used (unwritable data folder, corrupt database...)."""


class Base(DeclarativeBase):
    """Tables of the job store."""


class User(Base):
    """A user: a name; tokens authenticate as this user."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created: Mapped[float] = mapped_column(Float)


class Token(Base):
    """A bearer token, stored as its SHA-256 only (the token is shown once, at creation)."""

    __tablename__ = "tokens"
    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created: Mapped[float] = mapped_column(Float)


class SceneRow(Base):
    """A registered scene: its modalities (catalog ``ModalitySpec`` dicts, absolute paths or
    URLs; the first is the main image) and what was read from it."""

    __tablename__ = "scenes"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))  # path, url, stac, upload
    modalities: Mapped[dict] = mapped_column(JSON)
    info: Mapped[dict] = mapped_column(JSON)
    created: Mapped[float] = mapped_column(Float)


class JobRow(Base):
    """A job: what to run (resolved at submission), its state, progress and result."""

    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("user_id", "idempotency_key"),)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True, index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    state: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    spec: Mapped[dict] = mapped_column(JSON)
    progress: Mapped[dict] = mapped_column(JSON, default=dict)
    result: Mapped[dict] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created: Mapped[float] = mapped_column(Float)
    started: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished: Mapped[float | None] = mapped_column(Float, nullable=True)


def hash_token(token: str) -> str:
    """SHA-256 of a token: tokens are 256-bit random strings, so a plain hash is enough to
    keep them unusable from a copy of the store, and it can be looked up."""
    return hashlib.sha256(token.encode()).hexdigest()


def _job_dict(row: JobRow) -> dict[str, Any]:
    return {"id": row.id, "seq": row.seq, "user_id": row.user_id, "state": row.state,
            "spec": row.spec, "progress": row.progress or {}, "result": row.result or {},
            "error": row.error, "cancel_requested": row.cancel_requested,
            "attempts": row.attempts, "pid": row.pid, "created": row.created,
            "started": row.started, "finished": row.finished,
            "idempotency_key": row.idempotency_key}  # fmt: skip


def _scene_dict(row: SceneRow) -> dict[str, Any]:
    return {"id": row.id, "user_id": row.user_id, "name": row.name, "kind": row.kind,
            "modalities": row.modalities, "info": row.info, "created": row.created}  # fmt: skip


class Store:
    """The SQLite job store of a data folder (``DATA/geoseg.db``), created on first use."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{self.path.parent}: cannot create the data folder ({exc.strerror}); "
                             "choose a writable --data folder") from None  # fmt: skip
        self.engine = create_engine(f"sqlite:///{self.path}", connect_args={"timeout": 30})
        event.listen(self.engine, "connect", _pragmas)
        try:
            Base.metadata.create_all(self.engine)
        except OperationalError as exc:
            raise StoreError(f"{self.path}: cannot open the job store ({exc.orig}); check the "
                             "--data folder's permissions and free space") from None  # fmt: skip
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on error."""
        with self._session() as s, s.begin():
            yield s

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ users and tokens

    def create_token(self, name: str) -> str:
        """A new token for user ``name`` (created when new); only its hash is stored."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.session() as s:
            user = s.scalar(select(User).where(User.name == name))
            if user is None:
                user = User(name=name, created=time.time())
                s.add(user)
                s.flush()
            s.add(Token(hash=hash_token(token), user_id=user.id, created=time.time()))
        return token

    def revoke_tokens(self, name: str) -> int:
        """Delete every token of user ``name``; returns how many there were."""
        with self.session() as s:
            user = s.scalar(select(User).where(User.name == name))
            if user is None:
                return 0
            tokens = s.scalars(select(Token).where(Token.user_id == user.id)).all()
            for t in tokens:
                s.delete(t)
            return len(tokens)

    def users(self) -> list[dict[str, Any]]:
        with self.session() as s:
            rows = s.execute(select(User)).scalars().all()
            out = []
            for u in rows:
                n = len(s.scalars(select(Token.hash).where(Token.user_id == u.id)).all())
                out.append({"id": u.id, "name": u.name, "tokens": n, "created": u.created})
            return out

    def user(self, name: str) -> dict[str, Any] | None:
        """The user called ``name``, or None."""
        with self.session() as s:
            u = s.scalar(select(User).where(User.name == name))
            return {"id": u.id, "name": u.name} if u is not None else None

    def user_for_token(self, token: str) -> dict[str, Any] | None:
        """The user a bearer token belongs to, or None."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        with self.session() as s:
            row = s.execute(select(User.id, User.name).join(Token, Token.user_id == User.id)
                            .where(Token.hash == hash_token(token))).first()  # fmt: skip
            return {"id": row.id, "name": row.name} if row else None

    # ------------------------------------------------------------------ scenes

    def add_scene(self, user_id: int, name: str, kind: str, modalities: dict[str, Any],
                  info: dict[str, Any], scene_id: str | None = None) -> dict[str, Any]:  # fmt: skip
        row = SceneRow(id=scene_id or uuid.uuid4().hex, user_id=user_id, name=name, kind=kind,
                       modalities=modalities, info=info, created=time.time())  # fmt: skip
        with self.session() as s:
            s.add(row)
        return _scene_dict(row)

    def scene(self, user_id: int, scene_id: str) -> dict[str, Any] | None:
        """A scene of this user (None for another user's: they are not told it exists)."""
        with self.session() as s:
            row = s.get(SceneRow, scene_id)
            return _scene_dict(row) if row is not None and row.user_id == user_id else None

    def scenes(self, user_id: int) -> list[dict[str, Any]]:
        with self.session() as s:
            rows = s.scalars(select(SceneRow).where(SceneRow.user_id == user_id)
                             .order_by(SceneRow.created)).all()  # fmt: skip
            return [_scene_dict(r) for r in rows]

    # ------------------------------------------------------------------ jobs

    def add_job(self, user_id: int, spec: dict[str, Any],
                idempotency_key: str | None = None) -> tuple[dict[str, Any], bool]:  # fmt: skip
        """A new queued job, or (with an idempotency key seen before) the existing one;
        the flag says whether the job is new."""
        if idempotency_key is not None:
            old = self.job_by_key(user_id, idempotency_key)
            if old is not None:
                return old, False
        row = JobRow(id=uuid.uuid4().hex, user_id=user_id, idempotency_key=idempotency_key,
                     state="queued", spec=spec, progress={}, result={}, created=time.time())  # fmt: skip
        try:
            with self.session() as s:
                s.add(row)
        except IntegrityError:  # the same key submitted twice at once: the first one won
            old = self.job_by_key(user_id, idempotency_key or "")
            if old is None:
                raise
            return old, False
        return _job_dict(row), True

    def job_by_key(self, user_id: int, key: str) -> dict[str, Any] | None:
        with self.session() as s:
            row = s.scalar(select(JobRow).where(JobRow.user_id == user_id,
                                                JobRow.idempotency_key == key))  # fmt: skip
            return _job_dict(row) if row is not None else None

    def job(self, job_id: str, user_id: int | None = None) -> dict[str, Any] | None:
        """A job (of ``user_id`` when given: another user's job is None)."""
        with self.session() as s:
            row = s.scalar(select(JobRow).where(JobRow.id == job_id))
            if row is None or (user_id is not None and row.user_id != user_id):
                return None
            return _job_dict(row)

    def jobs(self, user_id: int | None = None, states: tuple[str, ...] | None = None,
             limit: int = 1000) -> list[dict[str, Any]]:  # fmt: skip
        """Jobs in submission order (of one user, in some states)."""
        q = select(JobRow).order_by(JobRow.seq)
        if user_id is not None:
            q = q.where(JobRow.user_id == user_id)
        if states is not None:
            q = q.where(JobRow.state.in_(states))
        with self.session() as s:
            return [_job_dict(r) for r in s.scalars(q.limit(limit)).all()]

    def set_job(self, job_id: str, only_if: tuple[str, ...] | None = None, **values: Any) -> bool:
        """Update a job's columns (only while its state is one of ``only_if``); True if done."""
        q = update(JobRow).where(JobRow.id == job_id)
        if only_if is not None:
            q = q.where(JobRow.state.in_(only_if))
        with self.session() as s:
            return s.execute(q.values(**values)).rowcount > 0

    def requeue_running(self) -> list[str]:
        """After a restart: jobs left running by the dead server go back to the queue (those
        whose cancellation was asked are cancelled)."""
        now = time.time()
        with self.session() as s:
            rows = s.scalars(select(JobRow).where(JobRow.state == "running")).all()
            for r in rows:
                if r.cancel_requested:
                    r.state, r.finished = "cancelled", now
                else:
                    r.state, r.pid = "queued", None
                    r.progress = {**(r.progress or {}), "stage": "queued", "eta_s": None}
            return [r.id for r in rows if r.state == "queued"]


def _pragmas(conn: Any, _record: Any) -> None:
    cur = conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def open_store(data: Path) -> Store:
    """The store of a data folder; an unusable folder is a one-line error naming it."""
    try:
        return Store(Path(data) / "geoseg.db")
    except OSError as exc:
        raise OutputError(f"{data}: cannot use the data folder ({exc}); choose a writable "
                          "--data folder") from None  # fmt: skip
