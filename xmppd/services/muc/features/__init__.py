"""Room features, one module each (as Prosody's ``plugins/muc/*.lib.lua``).

Each is a :class:`~xmppd.services.muc.hooks.Feature`: hooks on the room
events, the configuration fields it owns, the disco features it adds. The
order of :data:`FEATURES` is the order of the owner's configuration form.
"""

from xmppd.services.muc.features.admin import AdminProtocol
from xmppd.services.muc.features.hidden import Hidden
from xmppd.services.muc.features.history import History
from xmppd.services.muc.features.info import RoomInfo
from xmppd.services.muc.features.invites import Invites
from xmppd.services.muc.features.locking import Locking
from xmppd.services.muc.features.mam import MUCArchive
from xmppd.services.muc.features.max_users import MaxUsers
from xmppd.services.muc.features.members_only import MembersOnly
from xmppd.services.muc.features.moderated import Moderated
from xmppd.services.muc.features.moderation import Moderation
from xmppd.services.muc.features.name import RoomName
from xmppd.services.muc.features.occupant_id import OccupantId
from xmppd.services.muc.features.occupant_iq import OccupantIq
from xmppd.services.muc.features.owner import OwnerProtocol
from xmppd.services.muc.features.password import Password
from xmppd.services.muc.features.persistent import Persistent
from xmppd.services.muc.features.presence_broadcast import PresenceBroadcast
from xmppd.services.muc.features.rate_limit import RateLimit
from xmppd.services.muc.features.register import Registration
from xmppd.services.muc.features.subject import Subject
from xmppd.services.muc.features.voice_request import VoiceRequest
from xmppd.services.muc.features.whois import Whois

FEATURES = (
    RoomName, Persistent, Hidden, Subject, Invites, MembersOnly, Moderated, Password,
    Whois, MaxUsers, History, PresenceBroadcast, Locking, OccupantId, Registration, VoiceRequest, RateLimit,
    OccupantIq, AdminProtocol, OwnerProtocol, RoomInfo, MUCArchive, Moderation,
)
