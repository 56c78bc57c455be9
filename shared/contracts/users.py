"""How a user is read and shown: User → Address → City → Country in one SELECT."""
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema
from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload
from sqlalchemy.orm.interfaces import LoaderOption

from shared.contracts.personal import FIELD_NOTE, PERSONAL
from shared.contracts.tables import Address, City, Country, User


# A personal field: a string when present, absent without the personal scope (shared.contracts.personal).
# The OpenAPI document names the scope in its description and as `x-scope` (services.api.contract).
def _mark_personal(schema: dict[str, Any]) -> None:
    schema.pop("default", None)  # absent, not null: a string field has no null default to document
    schema["x-scope"] = PERSONAL


def _personal_field() -> Any:  # what pydantic.Field returns (typed Any, for the field's default)
    return Field(None, description=FIELD_NOTE, json_schema_extra=_mark_personal)


def with_address() -> LoaderOption:
    """Eager-load the address chain in the same query (the guide's cure for N+1)."""
    return joinedload(User.address).joinedload(Address.city).joinedload(City.country)


class CountryOut(BaseModel):
    code: str
    name: str


class AddressOut(BaseModel):
    street: str | SkipJsonSchema[None] = _personal_field()
    city: str
    country: CountryOut


class UserOut(BaseModel):
    id: int
    username: str | SkipJsonSchema[None] = _personal_field()
    email: str | SkipJsonSchema[None] = _personal_field()
    full_name: str | SkipJsonSchema[None] = _personal_field()
    profile_score: float
    created_at: datetime
    address: AddressOut

    @classmethod
    def of(cls, user: User) -> "UserOut":
        city = user.address.city
        return cls(
            id=user.id,
            username=user.username,
            email=user.email,
            full_name=user.full_name,
            profile_score=user.profile_score,
            created_at=user.created_at,
            address=AddressOut(
                street=user.address.street,
                city=city.name,
                country=CountryOut(code=city.country.code, name=city.country.name),
            ),
        )


_SUMMARY_COLUMNS = (User.id, User.username, User.email, User.full_name, User.profile_score, User.created_at,
                    Address.street, City.name.label("city"), Country.code, Country.name.label("country"))


def user_records(session: Session, user_ids: list[int]) -> dict[int, dict[str, Any]]:
    """The JSON records (`UserOut`) of many users from one SELECT of plain rows (no ORM objects: for the
    hundreds of users a rescoring batch reads, building them cost more than the query)."""
    rows = session.execute(
        select(*_SUMMARY_COLUMNS).join(User.address).join(Address.city).join(City.country).where(User.id.in_(user_ids))
    )
    return {
        row.id: UserOut(
            id=row.id, username=row.username, email=row.email, full_name=row.full_name,
            profile_score=row.profile_score, created_at=row.created_at,
            address=AddressOut(street=row.street, city=row.city, country=CountryOut(code=row.code, name=row.country)),
        ).model_dump(mode="json")
        for row in rows
    }
