"""How a user is read and shown: User → Address → City → Country in one SELECT."""
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy.orm import joinedload

from shared.models import Address, City, User


def with_address():
    """Eager-load the address chain in the same query (the guide's cure for N+1)."""
    return joinedload(User.address).joinedload(Address.city).joinedload(City.country)


class CountryOut(BaseModel):
    code: str
    name: str


class AddressOut(BaseModel):
    street: str
    city: str
    country: CountryOut


class UserOut(BaseModel):
    id: int
    username: str
    email: str
    full_name: str
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


def user_summary(user: User) -> dict:
    return UserOut.of(user).model_dump(mode="json")
